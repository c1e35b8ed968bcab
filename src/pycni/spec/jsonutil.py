"""Small helpers for reading decoded JSON the way Go's encoding/json does.

Go matches object keys to struct fields case-insensitively, and the reference
plugins depend on it (containerd sends ``HostPort`` for ``hostPort``), so a
faithful reader looks a key up exactly first, then ignoring case.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads(data: str | bytes | bytearray, **options: Any) -> Any:
    """``json.loads`` as Go decodes: every failure a ``ValueError`` (or ``UnicodeDecodeError``),
    and a lone UTF-16 surrogate escape (``"\\ud800"``) read as U+FFFD.

    The decoder raises ``RecursionError`` on deeply nested input (a few thousand
    ``[``), which callers catching ``ValueError`` would let through as a crash. A lone
    surrogate is valid JSON that no UTF-8 encoder takes: Go's decoder replaces it
    ("invalid UTF-16 surrogate pairs are not treated as an error"), Python keeps it, and it
    would fail as ``UnicodeEncodeError`` wherever the string reaches the OS or netlink.
    ``options`` go to ``json.loads`` (e.g. ``object_pairs_hook``).
    """
    try:
        decoded = json.loads(data, **options)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if _ESCAPED_SURROGATE.search(raw) or (isinstance(data, str) and _SURROGATE.search(data)):
        decoded = replace_surrogates(decoded)
    return decoded


def replace_surrogates(value: Any) -> Any:
    """``value`` with every UTF-16 surrogate in its strings (keys too) replaced by U+FFFD.

    Iterative, so any depth the decoder accepted is walked without recursion.
    """

    def fix(text: str) -> str:
        return _SURROGATE.sub("\ufffd", text)

    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        holder, key = stack.pop()
        item = holder[key]
        if isinstance(item, str):
            holder[key] = fix(item)
        elif isinstance(item, list):
            stack.extend((item, index) for index in range(len(item)))
        elif isinstance(item, dict):
            fixed = {fix(k) if isinstance(k, str) else k: v for k, v in item.items()}
            holder[key] = fixed
            stack.extend((fixed, k) for k in fixed)
    return root[0]


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
