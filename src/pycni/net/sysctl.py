"""sysctls under /proc/sys, read and written in the calling thread's namespace.

``/proc/sys/net`` shows the network namespace of the thread that opens it,
so a plugin enters the container (``netns.entered``) before touching the
container's sysctls.
"""

from __future__ import annotations

import os

from pycni.spec.errors import CNIError, ErrorCode


def _path(name: str) -> str:
    return os.path.join("/proc/sys", name.replace(".", "/") if "/" not in name else name)


def read(name: str) -> str:
    with open(_path(name)) as handle:
        return handle.read().strip()


def write(name: str, value: str, missing_ok: bool = False) -> None:
    """Write ``value``; a missing sysctl is an error unless ``missing_ok``."""
    try:
        fd = os.open(_path(name), os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return
        raise CNIError(ErrorCode.INTERNAL, f"sysctl {name} does not exist") from None
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise CNIError(ErrorCode.INTERNAL, f"failed to set sysctl {name}={value}: {exc.strerror}") from None
    finally:
        os.close(fd)


def enable_forwarding(ipv4: bool, ipv6: bool) -> None:
    """Turn on IP forwarding for the families used (``ip.EnableForward``)."""
    if ipv4 and read("net/ipv4/ip_forward") != "1":
        write("net/ipv4/ip_forward", "1")
    if ipv6 and read("net/ipv6/conf/all/forwarding") != "1":
        write("net/ipv6/conf/all/forwarding", "1")
