"""JSON text exactly as Go's ``encoding/json`` writes it, so stored values are byte-for-byte Calico's.

Go's ``json.Marshal`` is compact, keeps non-ASCII as UTF-8, escapes ``<``, ``>``,
``&``, U+2028 and U+2029, and writes a whole float64 without a fraction
(``1000000``, where Python writes ``1000000.0``). Key order is the caller's: the
model builds dicts in the Go struct's field order (maps are sorted, as Go sorts
them). ``marshal_indent`` is ``json.MarshalIndent(v, "", "  ")`` (calicoctl's
``-o json``).
"""

from __future__ import annotations

import json
import math
from typing import Any

_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _go_float(value: float) -> str:
    """Go's float64 text: shortest digits, 'f' notation for 1e-6 <= |x| < 1e21, else 'e' (``1e-7``, ``1e+21``)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"Go cannot encode {value} as JSON")
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if 1e-6 <= abs(value) < 1e21:
        if "e" in text:
            digits, exponent = text.split("e")
            return format(float(text), f".{max(0, -int(exponent) + len(digits.replace('.', '').lstrip('-')) - 1)}f")
        return text
    mantissa, _, exponent = text.partition("e")
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def _encode(value: Any, indent: str | None, level: int) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).translate(_HTML)
    if isinstance(value, dict):
        items = [(_encode(str(k), None, 0), _encode(v, indent, level + 1)) for k, v in value.items()]
        if not items:
            return "{}"
        if indent is None:
            return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
        pad = "\n" + indent * (level + 1)
        return "{" + ",".join(f"{pad}{k}: {v}" for k, v in items) + "\n" + indent * level + "}"
    if isinstance(value, list | tuple):
        parts = [_encode(v, indent, level + 1) for v in value]
        if not parts:
            return "[]"
        if indent is None:
            return "[" + ",".join(parts) + "]"
        pad = "\n" + indent * (level + 1)
        return "[" + ",".join(pad + p for p in parts) + "\n" + indent * level + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def marshal(value: Any) -> str:
    """``json.Marshal``: compact, HTML-safe, UTF-8."""
    return _encode(value, None, 0)


def marshal_indent(value: Any) -> str:
    """``json.MarshalIndent(v, "", "  ")`` (no trailing newline, as Go)."""
    return _encode(value, "  ", 0)
