"""Entering network namespaces, by path or by an already-open handle.

``setns(2)`` changes only the calling thread, so :func:`entered` switches the
current thread in and always back. Netlink sockets stay bound to the
namespace they were created in, so :func:`iproute` opens a pyroute2 socket
inside the target and returns to the caller's namespace at once: no fork,
and, unlike pyroute2's ``netns=`` argument, never creates a namespace that
does not exist (a DEL for a stale path must not make one).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pycni.spec.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsNotFound(CNIError):
    """``CNI_NETNS`` names nothing; DEL treats this as already done."""

    def __init__(self, path: str) -> None:
        super().__init__(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"CNI_NETNS: network namespace {path} does not exist")
        self.path = path


class NotANetns(CNIError):
    def __init__(self, path: str) -> None:
        super().__init__(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"CNI_NETNS: {path} is not a network namespace")


def open_netns(path: str) -> int:
    """An O_RDONLY handle on a namespace path; the caller closes it."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(path) from None
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"CNI_NETNS: cannot open {path}: {exc.strerror}") from None


def setns(fd: int, what: str) -> None:
    """Move the calling thread into the namespace ``fd``; ``what`` names it in errors."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:
            raise NotANetns(what)
        raise CNIError(ErrorCode.INTERNAL, f"setns({what}): {os.strerror(err)}")


@contextmanager
def entered(path: str, fd: int | None = None) -> Iterator[None]:
    """Run the body in the namespace ``fd`` (if given) or ``path``, then return."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = fd if fd is not None else open_netns(path)
    try:
        setns(target, path or f"fd {target}")
        try:
            yield
        finally:
            setns(own, "the caller's namespace")
    finally:
        os.close(own)
        if fd is None:
            os.close(target)


@contextmanager
def handle(path: str, fd: int | None = None) -> Iterator[int]:
    """An open handle on the namespace: ``fd`` itself, or ``path`` opened (and closed after)."""
    if fd is not None:
        yield fd
        return
    opened = open_netns(path)
    try:
        yield opened
    finally:
        os.close(opened)


def iproute(path: str, fd: int | None = None) -> IPRoute:
    """A pyroute2 socket bound to the namespace at ``path`` (or handle ``fd``)."""
    from pyroute2 import IPRoute

    with entered(path, fd):
        return IPRoute()


def iproute_here() -> IPRoute:
    """A pyroute2 socket in the calling thread's own namespace (the host's, for a plugin)."""
    from pyroute2 import IPRoute

    return IPRoute()


@contextmanager
def temporary() -> Iterator[int]:
    """A new, unnamed namespace that lives while its handle is open (Go's ``ns.TempNetNS``).

    host-device renames a device there, away from udev and the host's names.
    Closing the handle destroys the namespace: virtual links in it die and
    physical ones fall back to the initial namespace, so callers empty it first.
    Only the calling thread unshares, and it is switched straight back.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise CNIError(ErrorCode.INTERNAL, f"failed to create a temporary network namespace: {os.strerror(err)}")
        try:
            temp = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            setns(own, "the caller's namespace")
    finally:
        os.close(own)
    try:
        yield temp
    finally:
        os.close(temp)
