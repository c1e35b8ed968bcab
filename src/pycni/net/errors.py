"""Netlink errors translated into CNI errors that say what failed and why."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2.netlink.exceptions import NetlinkError

from pycni.spec.errors import CNIError, ErrorCode

__all__ = ["LinkNotFound", "NetError", "NetlinkError", "netlink"]  # NetlinkError for code outside pycni.net


class NetError(CNIError):
    """A kernel operation failed; ``errno`` keeps the kernel's reason."""

    def __init__(self, action: str, err: int) -> None:
        super().__init__(ErrorCode.INTERNAL, f"{action}: {os.strerror(err)}")
        self.errno = err


class LinkNotFound(NetError):
    def __init__(self, name: str) -> None:
        super().__init__(f"link {name!r} not found", errno.ENODEV)
        self.name = name


@contextmanager
def netlink(action: str, ignore: tuple[int, ...] = ()) -> Iterator[None]:
    """Run the body; a ``NetlinkError`` becomes a :class:`NetError` naming ``action``.

    An errno in ``ignore`` means the work is already done (EEXIST on add,
    ENOENT on delete ...): the body's failure is then success.
    """
    try:
        yield
    except NetlinkError as exc:
        if int(exc.code) not in ignore:
            raise NetError(action, int(exc.code)) from None
