"""What a picture of the network shows, as plain data: no I/O, no geometry.

A collector (:mod:`.collect_flannel`, :mod:`.collect_calico`) fills it from the
datastore and the kernel of the node it runs on; the layout and the SVG only
read it. State seen from this node's kernel (a route, a BGP session) is a
:class:`Badge` or a :class:`Link` with a :class:`State`; what this node cannot
see is :attr:`State.UNKNOWN`, drawn as such rather than guessed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pycni.spec.errors import CNIError, ErrorCode


class PictureError(CNIError):
    """The picture cannot be made (no datastore, nothing in it, no converter); the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG, message)


class State(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"  # not visible from this node


@dataclass(frozen=True)
class Badge:
    """A short state word on a node card (``BGP Established``, ``route ok``); ``detail`` is its tooltip."""

    text: str
    state: State
    detail: str = ""


@dataclass(frozen=True)
class Subnet:
    """A Flannel lease's subnet or a Calico block affine to the node; ``note`` e.g. ``3/64 used``."""

    cidr: str
    kind: str = "subnet"
    note: str = ""


@dataclass(frozen=True)
class Pod:
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Node:
    """One node: its underlay address (and the underlay network it is on, when known), what it holds, its state."""

    name: str
    address: str = ""
    segment: str = ""  # the underlay network, e.g. 198.51.100.0/24; "" when the datastore does not say
    subnets: tuple[Subnet, ...] = ()
    pods: tuple[Pod, ...] = ()
    details: tuple[str, ...] = ()  # device lines: "flannel.1 MTU 1450", "vxlan.calico 10.244.3.0"
    badges: tuple[Badge, ...] = ()
    local: bool = False  # the node whose kernel was read


@dataclass(frozen=True)
class Link:
    """A tunnel or BGP session between two nodes (by name), with its state as this node sees it."""

    a: str
    b: str
    label: str
    state: State
    detail: str = ""


@dataclass(frozen=True)
class Picture:
    """The whole picture: a title, the overlay (the label of the underlay bus), facts for the header."""

    title: str
    overlay: str
    facts: tuple[str, ...]
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = ()

    def node(self, name: str) -> Node | None:
        return next((node for node in self.nodes if node.name == name), None)

    @property
    def pod_count(self) -> int:
        return sum(len(node.pods) for node in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``pycni inspect --json``): states as their words."""

        def badge(b: Badge) -> dict[str, Any]:
            return {"text": b.text, "state": b.state.value, "detail": b.detail}

        return {
            "title": self.title,
            "overlay": self.overlay,
            "facts": list(self.facts),
            "nodes": [
                {
                    "name": n.name,
                    "address": n.address,
                    "segment": n.segment,
                    "local": n.local,
                    "subnets": [{"cidr": s.cidr, "kind": s.kind, "note": s.note} for s in n.subnets],
                    "pods": [{"name": p.name, "addresses": list(p.addresses)} for p in n.pods],
                    "details": list(n.details),
                    "badges": [badge(b) for b in n.badges],
                }
                for n in self.nodes
            ],
            "links": [
                {"a": k.a, "b": k.b, "label": k.label, "state": k.state.value, "detail": k.detail} for k in self.links
            ],
        }


def problems_fact(nodes: tuple[Node, ...] | list[Node]) -> str:
    """One header line naming the nodes with a failed or degraded badge: at 30 nodes the eye needs a start."""
    failed = [n.name for n in nodes if any(b.state is State.FAIL for b in n.badges)]
    degraded = [n.name for n in nodes if n.name not in failed and any(b.state is State.WARN for b in n.badges)]
    if not failed and not degraded:
        return "no problem seen: every badge is ok or not visible from this node"
    parts = []
    if failed:
        parts.append(f"{len(failed)} node(s) with something down or missing: {', '.join(failed)}")
    if degraded:
        parts.append(f"{len(degraded)} degraded: {', '.join(degraded)}")
    return "; ".join(parts)


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """``node2`` before ``node10``, ``10.0.0.9`` before ``10.0.0.10``: digits compare as numbers."""
    parts: list[tuple[int, int, str]] = []
    digits = ""
    rest = ""
    for char in text:
        if char.isdigit() and char.isascii():
            if rest:
                parts.append((1, 0, rest))
                rest = ""
            digits += char
        else:
            if digits:
                parts.append((0, int(digits), ""))
                digits = ""
            rest += char
    if digits:
        parts.append((0, int(digits), ""))
    if rest:
        parts.append((1, 0, rest))
    return tuple(parts)
