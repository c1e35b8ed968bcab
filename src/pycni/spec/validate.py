"""Validation of container IDs, network names and interface names.

Same rules, codes and messages as ``cni/pkg/utils``; both the plugin SDK and
the runtime call these so a bad name fails the same way on either side.
"""

from __future__ import annotations

import re

from pycni.spec.errors import CNIError, ErrorCode

_VALID_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
MAX_INTERFACE_NAME_LENGTH = 15
TEMPLATE_HINT = "the kernel takes a name with % as a template (eth%d) and picks another name"


def validate_container_id(container_id: str) -> None:
    if container_id == "":
        raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "missing containerID")
    if not _VALID_NAME.fullmatch(container_id):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, "invalid characters in containerID", container_id)


def validate_network_name(name: str) -> None:
    if name == "":
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "missing network name")
    if not _VALID_NAME.fullmatch(name):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "invalid characters found in network name", name)


def validate_interface_name(ifname: str) -> None:
    if not ifname:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, "interface name is empty")
    try:
        encoded = ifname.encode()
    except UnicodeEncodeError:  # non-UTF-8 bytes in the environment arrive as lone surrogates
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
            "interface name is not valid UTF-8",
            f"CNI_IFNAME {ifname.encode('utf-8', 'surrogateescape')!r}",
        ) from None
    if len(encoded) > MAX_INTERFACE_NAME_LENGTH:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
            "interface name is too long",
            f"interface name should be less than {MAX_INTERFACE_NAME_LENGTH + 1} characters",
        )
    if ifname in (".", ".."):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, "interface name is . or ..")
    if any(ch in "/:" or ch.isspace() for ch in ifname):
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES, "interface name contains / or : or whitespace characters"
        )
    if "%" in ifname:  # beyond Go: the kernel would create eth0 for eth%d, and the plugin not find it
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, "interface name contains %", TEMPLATE_HINT)


def link_name_problem(name: str) -> str:
    """What makes ``name`` unusable as a Linux interface name (the kernel's ``dev_valid_name``,
    plus what cannot reach it: a NUL would cut the name short, non-UTF-8 cannot be encoded);
    empty if it is fine. For names in configs; ``CNI_IFNAME`` keeps the reference's messages."""
    if not name:
        return "it is empty"
    try:
        length = len(name.encode())
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if length > MAX_INTERFACE_NAME_LENGTH:
        return f"it is {length} bytes long, at most {MAX_INTERFACE_NAME_LENGTH} are allowed"
    if name in (".", ".."):
        return "it is . or .."
    if any(ch in "/:\x00" or ch.isspace() for ch in name):
        return "it contains /, :, a NUL or whitespace"
    if "%" in name:
        return f"it contains %: {TEMPLATE_HINT}"
    return ""
