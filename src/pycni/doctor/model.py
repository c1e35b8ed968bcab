"""What a check says: a status, a one-line message and advice on what to do.

Statuses order by severity, so the worst finding of a run is ``max`` and the
exit status is its value (0 ok, 1 warn, 2 fail).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pycni.doctor.context import Node


class Status(enum.IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    """One check's verdict on this node (``advice`` empty when there is nothing to do)."""

    check: str
    status: Status
    message: str
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status.label, "message": self.message, "advice": self.advice}


def ok(check: str, message: str) -> Finding:
    return Finding(check, Status.OK, message)


def warn(check: str, message: str, advice: str) -> Finding:
    return Finding(check, Status.WARN, message, advice)


def fail(check: str, message: str, advice: str) -> Finding:
    return Finding(check, Status.FAIL, message, advice)


@dataclass(frozen=True)
class Check:
    """A named check: ``run`` returns its findings, none when it does not apply to this node."""

    name: str
    run: Callable[[Node], list[Finding]]
    summary: str = ""


def listed(items: list[str], limit: int = 5) -> str:
    """``a, b, c`` and ``(+N more)`` past ``limit``: a finding stays one line however many items it names."""
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
