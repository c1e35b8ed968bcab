"""The one error the policy model raises: every wrong field of an object, each with what to do about it.

Parsing collects all of a document's problems before raising, so a user fixes
a manifest in one pass. :class:`PolicyError` is a ``ValueError`` (it is bad
input) and a :class:`~pycni.spec.errors.CNIError` with code 7 (invalid
configuration), so the CLI and plugins report it without translating.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycni.spec.errors import CNIError, ErrorCode


@dataclass(frozen=True)
class Problem:
    """One wrong field: its path as the user wrote it (``spec.ingress[0].ports[1].endPort``) and the remedy."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyError(CNIError, ValueError):
    """A policy, tier, network set, profile, namespace or pod that cannot be accepted."""

    def __init__(self, subject: str, problems: Sequence[Problem]) -> None:
        self.subject = subject
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"{subject}: {self.problems[0]}"
        else:
            lines = "".join(f"\n  - {p}" for p in self.problems)
            message = f"{subject}: {len(self.problems)} problems:{lines}"
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG, message)


class Problems:
    """Collects problems while a document is read; :meth:`check` raises them together."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def check(self, subject: str) -> None:
        if self.items:
            raise PolicyError(subject, self.items)
