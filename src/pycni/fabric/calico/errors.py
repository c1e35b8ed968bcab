"""What the Calico layer fails with, worded as libcalico-go words it (``lib/errors/errors.go``).

Each is a :class:`~pycni.spec.errors.CNIError`, so a plugin or the CLI turns
it into the spec's error JSON or one line without translation: a resource or
manifest the user must fix is code 7 (6 when it does not even decode), a lost
race is code 11 (retry), and a resource asked for by name that is not there
is 999 with a message naming it (CNI has no "not found" code; code 3 means an
unknown container).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pycni.spec.errors import CNIError, ErrorCode


class CalicoError(CNIError):
    """Base of the Calico layer's own errors (not the datastore's, which keep their classes)."""

    code_for_class: int = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(self.code_for_class, message)


@dataclass(frozen=True)
class ErroredField:
    """One field that failed validation: its path as the user wrote it, the value, and what is allowed."""

    name: str
    reason: str
    value: Any = None

    def __str__(self) -> str:
        text = self.name if self.value is None else f"{self.name} = '{_go_value(self.value)}'"
        return f"{text} ({self.reason})" if self.reason else text


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    return str(value)


class ValidationError(CalicoError):
    """A resource or manifest that cannot be accepted; ``fields`` say which and why (Calico's ErrorValidation)."""

    code_for_class = ErrorCode.INVALID_NETWORK_CONFIG

    def __init__(self, fields: Sequence[ErroredField]) -> None:
        self.fields = list(fields)
        if not self.fields:
            message = "unknown validation error"
        elif len(self.fields) == 1:
            message = f"error with field {self.fields[0]}"
        else:
            message = "error with the following fields:\n" + "".join(f"-  {f}\n" for f in self.fields)
        super().__init__(message.rstrip("\n"))


class DecodeError(CalicoError):
    """A manifest that is not YAML/JSON of a known resource (wrong type, unknown field or kind)."""

    code_for_class = ErrorCode.DECODING_FAILURE


class ResourceAlreadyExists(CalicoError):
    code_for_class = ErrorCode.TRY_AGAIN_LATER

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        super().__init__(f"resource already exists: {identifier}")


class ResourceNotFound(CalicoError):
    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        super().__init__(f"resource does not exist: {identifier}")


class UpdateConflict(CalicoError):
    """The resource changed since it was read (its resourceVersion is no longer the one given)."""

    code_for_class = ErrorCode.TRY_AGAIN_LATER

    def __init__(self, identifier: str, detail: str = "") -> None:
        self.identifier = identifier
        super().__init__(f"update conflict: {identifier}" + (f": {detail}" if detail else ""))


class OperationNotSupported(CalicoError):
    def __init__(self, operation: str, identifier: str, reason: str = "") -> None:
        text = f"operation {operation} is not supported on {identifier}"
        super().__init__(f"{text}: {reason}" if reason else text)
