"""The CNI error object and the well-known error codes of the spec."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """Codes 0-99 are reserved by the spec; 8 and 999 are libcni's own."""

    UNKNOWN = 0
    INCOMPATIBLE_CNI_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT_VARIABLES = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    INVALID_NETNS = 8
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    INTERNAL = 999


class CNIError(Exception):
    """An error in the spec's shape: ``{"code", "msg", "details"}``.

    Plugins raise it to fail with a given code; the runtime raises it when a
    plugin reported one, so callers see the plugin's own code and message.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}; {self.details}" if self.details else self.msg

    def __repr__(self) -> str:
        return f"CNIError(code={self.code}, msg={self.msg!r}, details={self.details!r})"

    def to_dict(self, cni_version: str | None = None) -> dict[str, Any]:
        """The error object; ``cniVersion`` is included when known, as the spec asks."""
        data: dict[str, Any] = {}
        if cni_version:
            data["cniVersion"] = cni_version
        data["code"] = self.code
        data["msg"] = self.msg
        if self.details:
            data["details"] = self.details
        return data

    def to_json(self, cni_version: str | None = None) -> str:
        return json.dumps(self.to_dict(cni_version), indent=4)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CNIError:
        """Decode a plugin's error output; raises ``ValueError`` if it is not one."""
        code = data.get("code")
        msg = data.get("msg", "")
        details = data.get("details", "")
        if isinstance(code, bool) or not isinstance(code, int) or code < 0:
            raise ValueError("error object has no unsigned integer 'code'")
        if not isinstance(msg, str) or not isinstance(details, str):
            raise ValueError("error object 'msg' and 'details' must be strings")
        return cls(code, msg, details)
