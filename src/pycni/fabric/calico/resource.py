"""One projectcalico.org/v3 resource: kind, metadata, spec (and status), in Go's JSON shape.

:class:`Resource` holds decoded dicts in Go's field order (see
:mod:`~pycni.fabric.calico.schema`), so ``to_dict()`` marshals to the bytes
libcalico-go stores. :class:`KindSpec` describes a kind: its plural (the etcd
key segment), whether it is namespaced, calicoctl's names for it, its spec
schema, semantic validation and the defaults clientv3 fills in on write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pycni.fabric.calico.errors import ErroredField
from pycni.fabric.calico.schema import AnyJSON, Field, FieldType, Int, ListOf, Str, StrMap, Struct

API_VERSION = "projectcalico.org/v3"

# Kubernetes names: DNS-1123 subdomain (lower case, digits, '-', '.'), 253 characters at most.
NAME_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
NAME_SUBDOMAIN = NAME_LABEL + r"(\." + NAME_LABEL + ")*"
_NAME = re.compile("^" + NAME_SUBDOMAIN + "$")
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def name_problem(name: str, pattern: str = NAME_SUBDOMAIN, max_length: int = 253) -> str | None:
    if len(name) > max_length:
        return f"name is too long by {len(name) - max_length} bytes"
    if not re.match("^" + pattern + "$", name):
        chars = "alphanumeric characters, '-' or '.'" if pattern == NAME_SUBDOMAIN else "alphanumeric characters or '-'"
        return f"name must consist of lower case {chars} (regex: {pattern})"
    return None


def label_problem(key: str, value: str) -> str | None:
    """Kubernetes label rules (IsQualifiedName for the key, IsValidLabelValue for the value)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _NAME.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain (lower case, digits, '-', '.')"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: at most 63 of A-Z a-z 0-9 - _ . beginning and ending with a letter or digit"
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return f"label value {value!r}: empty, or at most 63 of A-Z a-z 0-9 - _ . beginning and ending alphanumeric"
    return None


class Timestamp(FieldType):
    """metav1.Time: RFC 3339 text; Go writes ``null`` for the zero time (omitempty does not drop it)."""

    what = "an RFC 3339 time such as 2024-01-01T00:00:00Z"
    zero = None

    def decode(self, value: Any, path: str, errors: list[ErroredField]) -> Any:
        if not isinstance(value, str) or not re.match(
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", value
        ):
            return self.wrong(value, path, errors)
        return value


OBJECT_META = Struct(
    "metadata",
    [
        Field("name", Str()),
        Field("generateName", Str()),
        Field("namespace", Str()),
        Field("selfLink", Str()),
        Field("uid", Str()),
        Field("resourceVersion", Str()),
        Field("generation", Int()),
        Field("creationTimestamp", Timestamp(), omit="never"),
        Field("deletionTimestamp", Timestamp(), omit="absent"),
        Field("deletionGracePeriodSeconds", Int(), omit="absent"),
        Field("labels", StrMap(label_problem)),
        Field("annotations", StrMap()),
        Field("ownerReferences", AnyJSON()),
        Field("finalizers", ListOf(Str())),
        Field("managedFields", AnyJSON()),
    ],
)


@dataclass
class Resource:
    """A v3 resource; ``metadata``/``spec``/``status`` are decoded dicts in Go's key order."""

    kind: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    status: dict[str, Any] | None = None
    api_version: str = API_VERSION

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion", ""))

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.metadata.get("labels") or {}
        return labels

    @property
    def identifier(self) -> str:
        """``Kind(name)`` or ``Kind(namespace/name)``, as libcalico-go's ResourceKey prints."""
        if self.namespace:
            return f"{self.kind}({self.namespace}/{self.name})"
        return f"{self.kind}({self.name})"

    def set_meta(self, key: str, value: Any) -> None:
        """Set a metadata field keeping Go's key order (unset with ``None``, except creationTimestamp)."""
        current = dict(self.metadata)
        if value is None and key != "creationTimestamp":
            current.pop(key, None)
        else:
            current[key] = value
        order = [f.name for f in OBJECT_META.fields]
        self.metadata = {k: current[k] for k in order if k in current}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "apiVersion": self.api_version, "metadata": self.metadata}
        out["spec"] = self.spec
        if self.status is not None:
            out["status"] = self.status
        return out

    def copy(self) -> Resource:
        import copy

        return copy.deepcopy(self)


Validator = Callable[[Resource], list[ErroredField]]


@dataclass(frozen=True)
class KindSpec:
    """What pycni knows of one kind: storage, calicoctl names, schema, rules and write-time defaults."""

    kind: str
    plural: str
    spec: Struct
    aliases: tuple[str, ...]
    namespaced: bool = False
    status: Struct | None = None
    status_always: bool = False  # a non-pointer Go struct: written as {} even when empty
    validate: Validator | None = None
    defaults: Callable[[Resource], None] | None = None
    name_pattern: str = NAME_SUBDOMAIN
    name_max: int = 253
    singleton: str | None = None  # the only name allowed ("default" for IPAMConfiguration)
    read_only: bool = False  # calicoctl refuses to create/replace/delete it (ClusterInformation)
    extra: dict[str, Any] = field(default_factory=dict)
