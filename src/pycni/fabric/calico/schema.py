"""Field types for Calico's resources: decode what a user wrote, in Go's order, with Go's omitempty.

A resource's spec is a :class:`Struct` of :class:`Field` s listed in the Go
struct's order, so the decoded dict (and so the stored JSON) has Calico's key
order. Decoding is strict like calicoctl's (``yaml.UnmarshalStrict``): an
unknown field, a wrong type or an invalid value is an
:class:`~pycni.fabric.calico.errors.ErroredField` naming the field path as
the user wrote it and saying what is allowed; all of a document's problems
are collected, not only the first. Key matching is exact first, then
case-insensitive, as Go's ``encoding/json`` matches struct fields.

``Field.omit`` says when a field is left out of the JSON, as Go's tags do:
``"empty"`` (``omitempty`` on a value: zero values are dropped), ``"absent"``
(``omitempty`` on a pointer: kept whenever given, even ``false`` or ``0``),
``"never"`` (no ``omitempty``, or ``omitempty`` on a struct value, which Go
never omits: written with its zero value if not given, ``{}`` for a struct).
``Field.default`` is a kubebuilder default used when the field is absent.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pycni.fabric.calico.errors import ErroredField
from pycni.policy.selector import SelectorError
from pycni.policy.selector import parse as parse_selector


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

Errors = list[ErroredField]


def describe(value: Any) -> str:
    """How a decoded YAML/JSON value reads in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class FieldType:
    """Decodes one value; ``what`` names the accepted form in messages; ``zero`` is Go's zero value."""

    what = "a value"
    zero: Any = None

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        raise NotImplementedError

    def wrong(self, value: Any, path: str, errors: Errors) -> Any:
        errors.append(ErroredField(path, f"expected {self.what}, got {describe(value)}"))
        return MISSING

    def is_zero(self, value: Any) -> bool:
        return value == self.zero or value is None


class Str(FieldType):
    what = "a string"
    zero = ""

    def __init__(self, check: Callable[[str], str | None] | None = None, max_length: int | None = None) -> None:
        self.check = check
        self.max_length = max_length

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, str):
            return self.wrong(value, path, errors)
        if self.max_length is not None and len(value) > self.max_length:
            errors.append(ErroredField(path, f"at most {self.max_length} characters", value))
            return MISSING
        if self.check is not None and value:
            problem = self.check(value)
            if problem:
                errors.append(ErroredField(path, problem, value))
                return MISSING
        return value


class Bool(FieldType):
    what = "a boolean (true or false)"
    zero = False

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        return value if isinstance(value, bool) else self.wrong(value, path, errors)


class Int(FieldType):
    zero = 0

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum
        bounds = {(None, None): "", (minimum, None): f" >= {minimum}", (None, maximum): f" <= {maximum}"}
        self.what = "an integer" + bounds.get((minimum, maximum), f" from {minimum} to {maximum}")

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return self.wrong(value, path, errors)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            errors.append(ErroredField(path, f"must be {self.what}", value))
            return MISSING
        return value


class IntChoice(Int):
    def __init__(self, *choices: int) -> None:
        super().__init__(min(choices), max(choices))
        self.choices = choices
        self.what = "one of " + ", ".join(str(c) for c in choices)

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        decoded = super().decode(value, path, errors)
        if decoded is not MISSING and decoded not in self.choices:
            errors.append(ErroredField(path, f"must be {self.what}", decoded))
            return MISSING
        return decoded


class Float(FieldType):
    what = "a number"
    zero = 0.0

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.wrong(value, path, errors)
        return float(value)


class Enum(FieldType):
    zero = ""

    def __init__(self, *values: str) -> None:
        self.values = values
        self.what = "one of " + ", ".join(values)

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, str):
            return self.wrong(value, path, errors)
        if value not in self.values:
            errors.append(ErroredField(path, f"must be {self.what}", value))
            return MISSING
        return value


def selector_problem(text: str) -> str | None:
    try:
        parse_selector(text)
    except SelectorError as exc:
        return f"invalid selector: {exc.problem} (at position {exc.position})"
    return None


class Selector(Str):
    what = "a selector string (e.g. all(), has(k), k == 'v')"

    def __init__(self, allow_global: bool = True) -> None:
        super().__init__(self._check, max_length=1024)
        self.allow_global = allow_global

    def _check(self, text: str) -> str | None:
        if not self.allow_global and "global(" in text:
            return "global() is not valid here"
        return selector_problem(text)


def _ip_problem(version: int | None) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return f"must be an IPv{version or '4 or IPv6'} address"
        if version is not None and address.version != version:
            return f"must be an IPv{version} address"
        return None

    return check


def _cidr_problem(version: int | None, *, allow_ip: bool) -> Callable[[str], str | None]:
    """A CIDR like Calico's ParseCIDROrIP: ``10.0.0.1/24`` (host bits allowed) or, if allowed, a bare IP."""

    def check(text: str) -> str | None:
        family = f"IPv{version}" if version else "IP"
        try:
            if "/" not in text and not allow_ip:
                raise ValueError
            network = ipaddress.ip_interface(text).network
        except ValueError:
            return f"must be an {family} CIDR such as {'10.0.0.1/24' if version != 6 else 'fd00::1/64'}"
        if version is not None and network.version != version:
            return f"must be an {family} CIDR"
        return None

    return check


def IP(version: int | None = None) -> Str:
    return Str(_ip_problem(version))


def CIDR(version: int | None = None, *, allow_ip: bool = True) -> Str:
    return Str(_cidr_problem(version, allow_ip=allow_ip))


_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$|^0$")
_INTERFACE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


def MAC() -> Str:
    return Str(lambda text: None if _MAC.match(text) else "must be a MAC address such as ee:ee:ee:ee:ee:ee")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float | None:
    """A Go duration (``90s``, ``1m30s``, ``500ms``, ``0``) or plain seconds (``2.5``) in seconds; None if neither."""
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    sign = -1.0 if stripped.startswith("-") else 1.0
    body = stripped.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        return None
    return sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def Duration() -> Str:
    return Str(lambda text: None if _DURATION.match(text) else "must be a duration such as 90s, 1m30s or 500ms")


def Interface() -> Str:
    return Str(lambda text: None if _INTERFACE.match(text) else "must be an interface name: 1-15 of a-z A-Z 0-9 _ . -")


class ASNumber(FieldType):
    """A BGP AS number: 0..4294967295, or asdot ``A.B`` (both 16-bit), as numorstring.ASNumber."""

    what = "an AS number (0-4294967295, or asdot such as 1.10)"
    zero = 0

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if isinstance(value, str):
            parsed = parse_as_number(value)
            if parsed is None:
                errors.append(ErroredField(path, f"invalid AS Number format ({value}): expected {self.what}", value))
                return MISSING
            return parsed
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            return self.wrong(value, path, errors)
        return value


def parse_as_number(text: str) -> int | None:
    if text.isdigit():
        number = int(text)
        return number if number <= 0xFFFFFFFF else None
    high, dot, low = text.partition(".")
    if dot and high.isdigit() and low.isdigit() and int(high) <= 0xFFFF and int(low) <= 0xFFFF:
        return (int(high) << 16) + int(low)
    return None


class IntOrString(FieldType):
    """numorstring's Protocol / Port: a number or a string (``TCP``, ``8080:8090``, ``http``)."""

    what = "a number or a string"

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str):
            return self.wrong(value, path, errors)
        return value


class AnyJSON(FieldType):
    """Any YAML/JSON value, kept as given (fields pycni carries but does not interpret)."""

    what = "any value"

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        return value

    def is_zero(self, value: Any) -> bool:
        return value is None or value in ("", 0, False, [], {})


class ListOf(FieldType):
    zero: Any = None

    def __init__(self, item: FieldType, max_items: int | None = None) -> None:
        self.item = item
        self.max_items = max_items
        self.what = f"a list of {item.what}"

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if value is None:
            return None
        if not isinstance(value, list):
            return self.wrong(value, path, errors)
        if self.max_items is not None and len(value) > self.max_items:
            errors.append(ErroredField(path, f"at most {self.max_items} items", len(value)))
        items = [self.item.decode(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return [v for v in items if v is not MISSING]

    def is_zero(self, value: Any) -> bool:
        return not value


class StrMap(FieldType):
    """A map of strings (labels, annotations); ``check(key, value)`` says what is wrong with an entry."""

    what = "a mapping of strings to strings"

    def __init__(self, check: Callable[[str, str], str | None] | None = None) -> None:
        self.check = check

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            return self.wrong(value, path, errors)
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(item, str):
                errors.append(ErroredField(f"{path}.{key}", f"expected a string, got {describe(item)}"))
                continue
            problem = self.check(str(key), item) if self.check else None
            if problem:
                errors.append(ErroredField(f"{path}.{key}", problem, item))
                continue
            out[str(key)] = item
        return dict(sorted(out.items()))  # Go writes map keys sorted

    def is_zero(self, value: Any) -> bool:
        return not value


Omit = Literal["empty", "absent", "never"]


@dataclass(frozen=True)
class Field:
    """One JSON field: its name, type, when Go omits it, a default when absent, whether it is required."""

    name: str
    type: FieldType
    omit: Omit = "empty"
    default: Any = MISSING
    required: bool = False


@dataclass
class Struct(FieldType):
    """A Go struct: fields in Go's order; unknown fields are errors (calicoctl decodes strictly)."""

    title: str
    fields: Sequence[Field] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.what = f"a mapping ({self.title})"
        self.by_name = {f.name: f for f in self.fields}
        self.by_folded = {f.name.lower(): f for f in self.fields}

    def is_zero(self, value: Any) -> bool:
        return not value

    def decode(self, value: Any, path: str, errors: Errors) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return self.wrong(value, path, errors)
        given: dict[str, Any] = {}
        for key, item in value.items():
            known = self.by_name.get(str(key)) or self.by_folded.get(str(key).lower())
            if known is None:
                allowed = ", ".join(f.name for f in self.fields) or "no fields"
                errors.append(ErroredField(f"{path}.{key}", f"unknown field; {self.title} has: {allowed}"))
                continue
            given[known.name] = item
        out: dict[str, Any] = {}
        for spec in self.fields:
            child = f"{path}.{spec.name}"
            if spec.name in given and given[spec.name] is not None:
                decoded = spec.type.decode(given[spec.name], child, errors)
                if decoded is MISSING:
                    continue
            elif spec.default is not MISSING:
                decoded = spec.default
            elif spec.required:
                errors.append(ErroredField(child, f"required: {spec.type.what}"))
                continue
            elif spec.omit == "never":  # Go marshals the zero value; a struct's is itself with its own zeros
                decoded = spec.type.decode(None, child, errors) if isinstance(spec.type, Struct) else spec.type.zero
            else:
                continue
            if spec.omit == "empty" and spec.type.is_zero(decoded):
                continue
            out[spec.name] = decoded
        return out
