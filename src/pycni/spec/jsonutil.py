"""Small helpers for reading decoded JSON the way Go's encoding/json does.

Go matches object keys to struct fields case-insensitively, and the reference
plugins depend on it (containerd sends ``HostPort`` for ``hostPort``), so a
faithful reader looks a key up exactly first, then ignoring case.
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads`` whose every failure is a ``ValueError`` (or ``UnicodeDecodeError``).

    The decoder raises ``RecursionError`` on deeply nested input (a few thousand
    ``[``), which callers catching ``ValueError`` would let through as a crash.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def get_key(data: dict[str, Any], key: str, default: Any = None) -> Any:
    """``data[key]``, falling back to a case-insensitive match as Go does."""
    if key in data:
        return data[key]
    folded = key.casefold()
    for candidate, value in data.items():
        if candidate.casefold() == folded:
            return value
    return default


def type_name(value: object) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
