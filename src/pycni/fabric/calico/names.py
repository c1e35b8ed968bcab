"""WorkloadEndpoint names from their primary identifiers, as ``libcalico-go/lib/names/workloadendpoint.go`` makes them.

A WorkloadEndpoint's name is its identifiers joined by ``-``, each ``-``
inside one doubled, in the orchestrator's order:

* ``k8s``: ``<node>-k8s-<pod>-<endpoint>``;
* ``cni``: ``<node>-cni-<containerID>-<endpoint>``;
* ``libnetwork``: ``<node>-libnetwork-libnetwork-<endpoint>``;
* anything else: ``<node>-<orchestrator>-<workload>-<endpoint>``.

The resource client checks a stored endpoint's name against its spec (clientv3
``assignOrValidateName``), the CNI plugin names endpoints with it, and
:meth:`WorkloadEndpointIdentifiers.name_matches` finds a workload's endpoints
whatever their interface (``NameMatches``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pycni.fabric.calico.errors import ErroredField, ValidationError


@dataclass(frozen=True)
class WorkloadEndpointIdentifiers:
    """``names.WorkloadEndpointIdentifiers``: the spec fields a WorkloadEndpoint's name is made of."""

    node: str = ""
    orchestrator: str = ""
    endpoint: str = ""
    workload: str = ""
    pod: str = ""
    container_id: str = ""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> WorkloadEndpointIdentifiers:
        """``IdentifiersForV3WorkloadEndpoint``."""
        return cls(
            node=str(spec.get("node") or ""),
            orchestrator=str(spec.get("orchestrator") or ""),
            endpoint=str(spec.get("endpoint") or ""),
            workload=str(spec.get("workload") or ""),
            pod=str(spec.get("pod") or ""),
            container_id=str(spec.get("containerID") or ""),
        )

    def segments(self) -> list[tuple[str, str]]:
        """(field, value) of each name segment (``getSegments``); the node is always required."""
        if not self.node:
            raise ValidationError([ErroredField("node", "field should be assigned")])
        middle = {
            "k8s": ("pod", self.pod),
            "cni": ("containerID", self.container_id),
            "libnetwork": ("orchestrator", self.orchestrator),
        }.get(self.orchestrator, ("workload", self.workload))
        return [("node", self.node), ("orchestrator", self.orchestrator), middle, ("endpoint", self.endpoint)]

    def name(self, prefix: bool = False) -> str:
        """``CalculateWorkloadEndpointName``; with ``prefix``, up to the first empty segment, ending in ``-``."""
        parts: list[str] = []
        for field, value in self.segments():
            if not value:
                if prefix:
                    return "-".join(parts) + "-"
                raise ValidationError([ErroredField(field, "field should be assigned", value)])
            if value.startswith("-") or value.endswith("-"):
                where = "begin" if value.startswith("-") else "end"
                raise ValidationError([ErroredField(field, f"field must not {where} with a '-'", value)])
            parts.append(value.replace("-", "--"))
        return "-".join(parts)

    def name_matches(self, name: str) -> bool:
        """``NameMatches``: the name's segments equal every identifier given (an empty one matches anything)."""
        wanted = self.segments()
        parts = split_name(name)
        if len(parts) != len(wanted):
            return False
        return all(not value or value == part for (_, value), part in zip(wanted, parts, strict=True))


def split_name(name: str) -> list[str]:
    """A WorkloadEndpoint name's segments, ``--`` unescaped (``extractParts``)."""
    parts: list[str] = []
    last = -1
    i = 1
    while i < len(name):
        if name[i] == "-":
            if i < len(name) - 1 and name[i + 1] == "-":
                i += 2
                continue
            parts.append(name[last + 1 : i].replace("--", "-"))
            last = i
        i += 1
    parts.append(name[last + 1 :].replace("--", "-"))
    return parts


def check_endpoint_name(name: str, spec: Mapping[str, Any]) -> str:
    """clientv3 ``assignOrValidateName``: the name the spec implies (``name`` if empty), or a ValidationError."""
    expected = WorkloadEndpointIdentifiers.from_spec(spec).name()
    if name and name != expected:
        raise ValidationError(
            [
                ErroredField(
                    "Name",
                    "the WorkloadEndpoint name does not match the primary identifiers assigned in the Spec: "
                    f"expected name {expected}",
                    name,
                )
            ]
        )
    return expected
