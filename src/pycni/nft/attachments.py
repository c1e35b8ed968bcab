"""Which attachments use a shared nftables object: one empty file per attachment, under /run.

A rule several containers share (masquerade's rule per network and subnet,
the firewall's per-bridge isolation) must go with the last of them, and the
kernel cannot say who uses it. So ADD records its attachment in a group
(``<root>/<table>-<netns>/<group>/<member>``) and DEL removes it; whoever
finds a group empty may delete the group's object. The callers hold
``nft.locked(table)`` around every use, so records and rules change together.

Why files under /run: creating or removing one costs microseconds on a tmpfs
(a fraction of a millisecond on a disk; no nftables commit on the hot path),
a file outlives the process that wrote it (a crashed daemon loses nothing),
and /run is normally a tmpfs, so records vanish at reboot as the kernel's
rules do (where it is not, the boot ID in the cookie below tells).

Per network namespace, as the rules are: the directory is named by the
namespace's inode, which the kernel reuses once a namespace is gone, so the
directory also holds the boot ID and the namespace's cookie
(``SO_NETNS_COOKIE``, never reused while the machine is up). A directory
whose cookie differs belongs to a dead namespace (or an earlier boot) and is
emptied before use. A namespace deleted with attachments in it leaves its
directory until its inode is reused.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import socket
import struct
from collections.abc import Iterable

from pycni import nft

ROOT = "/run/pycni/attachments"
COOKIE = ".netns-cookie"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)  # Linux >= 5.14; Python 3.11 lacks the name


@functools.cache
def boot_id() -> str:
    """This boot's random ID: a cookie counter restarts at boot, and /run is not a tmpfs everywhere."""
    try:
        with open(BOOT_ID) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def netns_cookie() -> str:
    """This boot and this thread's network namespace's cookie (none where the kernel has no cookies:
    a reused inode then goes unseen)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            cookie = str(struct.unpack("Q", probe.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0])
    except OSError:
        cookie = ""
    return f"{boot_id()}/{cookie}"


class Records:
    """The attachment records of one table in this thread's network namespace (hold ``nft.locked(table)``)."""

    def __init__(self, table: str, root: str = ROOT) -> None:
        self.path = os.path.join(root, f"{table}-{nft.netns_inode()}")
        self._cookie = netns_cookie()
        stored = _read(os.path.join(self.path, COOKIE))
        if stored != self._cookie and os.path.isdir(self.path):
            shutil.rmtree(self.path, ignore_errors=True)  # a dead namespace's records (or a torn first write)

    def add(self, group: str, member: str) -> None:
        if not os.path.isdir(self.path):
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            _write_atomically(os.path.join(self.path, COOKIE), self._cookie)
        directory = os.path.join(self.path, group)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.close(os.open(os.path.join(directory, member), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))

    def groups(self) -> dict[str, set[str]]:
        """Every group that has a member, with its members."""
        found: dict[str, set[str]] = {}
        for group in _listdir(self.path):
            if group != COOKIE:
                members = set(_listdir(os.path.join(self.path, group)))
                if members:
                    found[group] = members
        return found

    def members(self, group: str) -> set[str]:
        return set(_listdir(os.path.join(self.path, group)))

    def remove(self, member: str, groups: Iterable[str] | None = None, prefix: str = "") -> list[str]:
        """Remove ``member`` from ``groups`` (default: every group named ``prefix``...).

        Returns the groups it left empty. They stay until :meth:`tidy`: on a
        disk-backed /run an rmdir costs milliseconds, an unlink microseconds.
        """
        emptied = []
        for group in _listdir(self.path) if groups is None else groups:
            if group == COOKIE or not group.startswith(prefix):
                continue
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(os.path.join(self.path, group, member))
                if not _listdir(os.path.join(self.path, group)):
                    emptied.append(group)
        return emptied

    def tidy(self) -> None:
        """Remove empty groups, and the whole directory once no group is left (the node as before the first ADD)."""
        left = False
        for group in _listdir(self.path):
            if group == COOKIE:
                continue
            try:
                os.rmdir(os.path.join(self.path, group))
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
                left = left or error.errno != errno.ENOENT
        if not left:
            shutil.rmtree(self.path, ignore_errors=True)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write_atomically(path: str, text: str) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w") as handle:
        handle.write(text)
    os.rename(temp, path)
