"""Reading decoded YAML/JSON strictly: types checked, unknown fields named, every problem collected with its path.

Each helper takes the value, its path as the user wrote it and a
:class:`~pycni.policy.errors.Problems`; on a wrong value it records what was
expected and returns a neutral value, so parsing carries on and reports
everything at once. Kubernetes decodes field names exactly; Calico's
``encoding/json`` also accepts another case (``fold_case``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pycni.policy.errors import Problems


def describe(value: Any) -> str:
    """How a decoded value reads in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def mapping(
    value: Any, path: str, problems: Problems, fields: Sequence[str], what: str, *, fold_case: bool = False
) -> dict[str, Any]:
    """The mapping's known fields under their canonical names; unknown ones are problems (null is ``{}``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"expected a mapping ({what}), got {describe(value)}")
        return {}
    folded = {name.lower(): name for name in fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key) if str(key) in fields else folded.get(str(key).lower()) if fold_case else None
        if name is None:
            hint = folded.get(str(key).lower()) or next(iter(difflib.get_close_matches(str(key), fields, 1)), None)
            did_you_mean = f"did you mean {hint!r}? " if hint else ""
            problems.add(join(path, str(key)), f"unknown field; {did_you_mean}{what} has: {', '.join(fields)}")
            continue
        out[name] = item
    return out


def string(value: Any, path: str, problems: Problems, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {describe(value)}")
        return default
    return value


def integer(value: Any, path: str, problems: Problems, low: int, high: int) -> int | None:
    """An integer in ``[low, high]`` (a whole float such as 80.0 counts, as Go's decoder accepts it)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"expected an integer from {low} to {high}, got {describe(value)}")
        return None
    if not low <= value <= high:
        problems.add(path, f"{value} is out of range: use an integer from {low} to {high}")
        return None
    return value


def number(value: Any, path: str, problems: Problems) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(path, f"expected a number, got {describe(value)}")
        return None
    return float(value)


def boolean(value: Any, path: str, problems: Problems) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        problems.add(path, f"expected true or false, got {describe(value)}")
        return False
    return value


def items(value: Any, path: str, problems: Problems) -> Iterator[tuple[str, Any]]:
    """(path, item) for each item of a list (null is an empty list)."""
    if value is None:
        return
    if not isinstance(value, list):
        problems.add(path, f"expected a list, got {describe(value)}")
        return
    for index, item in enumerate(value):
        yield join(path, index), item


def strings(value: Any, path: str, problems: Problems) -> tuple[str, ...]:
    out = []
    for item_path, item in items(value, path, problems):
        if isinstance(item, str):
            out.append(item)
        else:
            problems.add(item_path, f"expected a string, got {describe(item)}")
    return tuple(out)


def string_map(
    value: Any, path: str, problems: Problems, check: Callable[[str, str], str | None] | None = None
) -> dict[str, str]:
    """A map of strings (labels, annotations), each entry checked by ``check``; keys sorted as Go writes them."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"expected a mapping of strings to strings, got {describe(value)}")
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        entry_path = join(path, str(key))
        if not isinstance(item, str):
            problems.add(entry_path, f"expected a string value, got {describe(item)} (quote it)")
            continue
        problem = check(str(key), item) if check is not None else None
        if problem:
            problems.add(entry_path, problem)
            continue
        out[str(key)] = item
    return dict(sorted(out.items()))


OBJECT_META_FIELDS = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def metadata(
    value: Any, problems: Problems, label_check: Callable[[str, str], str | None], *, fold_case: bool = False
) -> tuple[str, str, dict[str, str]]:
    """(name, namespace, labels) of an object's ``metadata``; the other ObjectMeta fields are accepted and ignored."""
    meta = mapping(value, "metadata", problems, OBJECT_META_FIELDS, "metadata", fold_case=fold_case)
    name = string(meta.get("name"), "metadata.name", problems)
    namespace = string(meta.get("namespace"), "metadata.namespace", problems)
    labels = string_map(meta.get("labels"), "metadata.labels", problems, label_check)
    string_map(meta.get("annotations"), "metadata.annotations", problems)
    if not name:
        problems.add("metadata.name", "required: give the object a name")
    return name, namespace, labels


def check_kind(document: Any, api_version: str, kind: str) -> dict[str, Any]:
    """The document, after checking it is a mapping of this apiVersion and kind; raises PolicyError otherwise."""
    problems = Problems()
    if not isinstance(document, dict):
        problems.add("", f"expected a {kind} (a mapping: apiVersion, kind, metadata, spec), got {describe(document)}")
        problems.check(kind)
        return {}
    if document.get("kind") != kind:
        problems.add("kind", f"got {describe(document.get('kind'))}; expected {kind}")
    if document.get("apiVersion") != api_version:
        problems.add("apiVersion", f"got {describe(document.get('apiVersion'))}; a {kind} is apiVersion {api_version}")
    problems.check(kind)
    return document
