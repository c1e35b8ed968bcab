"""``CNI_ARGS``: ``K1=V1;K2=V2`` pairs, parsed as ``cni/pkg/types/args.go`` does.

Keys are case-sensitive; a plugin declares the keys it knows, and any other
key is an error unless ``IgnoreUnknown`` is 1/true (any case). Runtimes such
as Kubernetes always send ``IgnoreUnknown=1``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from pycni.spec.errors import CNIError, ErrorCode


def split_pairs(args: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of a ``CNI_ARGS`` string, in order."""
    if args == "":
        return []
    pairs: list[tuple[str, str]] = []
    for pair in args.split(";"):
        parts = pair.split("=")
        if len(parts) != 2:
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"ARGS: invalid pair {pair!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise ValueError(f"boolean unmarshal error: invalid input {value}")


def load_args(args: str, known: Collection[str]) -> dict[str, str]:
    """Known keys to values; unknown keys fail unless ``IgnoreUnknown`` is set."""
    values: dict[str, str] = {}
    unknown: list[str] = []
    ignore_unknown = False
    for key, value in split_pairs(args):
        if key == "IgnoreUnknown":
            try:
                ignore_unknown = parse_bool(value)
            except ValueError as exc:
                raise CNIError(
                    ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"ARGS: error parsing value of pair '{key}={value}': {exc}"
                ) from None
        elif key in known:
            values[key] = value
        else:
            unknown.append(f"{key}={value}")
    if unknown and not ignore_unknown:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
            f"ARGS: unknown args {unknown}",
            "set IgnoreUnknown=1 in CNI_ARGS to let the plugin skip keys it does not know",
        )
    return values


def format_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    """``K=V;K=V``, the ``CNI_ARGS`` form."""
    return ";".join(f"{k}={v}" for k, v in pairs)
