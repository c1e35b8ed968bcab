"""The daemon's listening socket: handed over by systemd, or bound so the path is never dead.

Two sources, in this order:

* systemd socket activation (the ``sd_listen_fds`` protocol): when
  ``LISTEN_PID`` is this process and ``LISTEN_FDS`` is at least 1, descriptor
  3 is the listening socket. systemd owns the path: the daemon neither binds
  nor removes it, and while the daemon restarts, calls wait in the socket's
  backlog for the next one instead of being refused.
* its own: the daemon binds a temporary name beside the path, listens, and
  renames it over the path, under an ``flock`` of the directory. A caller
  therefore always finds a socket that is listening (the old daemon's until
  the rename, the new one's after), never a missing or half-made one. On stop
  it removes the path only while the path is still its own socket (same
  inode, checked under the same lock), so it never removes a successor's.
  A stopping daemon removes the path first thing, so callers then find no
  socket (and run in-process) until the next daemon renames its own in.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

from pycni.daemon import systemd

log = logging.getLogger("pycni.daemon")

BACKLOG = 1024


@dataclass
class Listener:
    sock: socket.socket
    path: str
    inode: tuple[int, int] | None  # (st_dev, st_ino) of the path we bound; None when systemd owns it

    @property
    def activated(self) -> bool:
        return self.inode is None

    def release_path(self) -> None:
        """Stop new callers from reaching us: remove the path if it is still our socket."""
        if self.inode is None:
            return
        with _directory_lock(os.path.dirname(self.path)):
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return
            if (st.st_dev, st.st_ino) == self.inode:
                os.unlink(self.path)

    def close(self) -> None:
        self.sock.close()


def acquire(path: str, env: MutableMapping[str, str] | None = None) -> Listener:
    """The listening socket: systemd's if it passed one, else a freshly bound one at ``path``."""
    activated = systemd.listen_socket(os.environ if env is None else env)
    if activated is not None:
        name = activated.getsockname()
        return Listener(activated, name if isinstance(name, str) and name else path, None)
    return bind_atomically(path)


def serving(path: str) -> bool:
    """Whether another daemon listens at ``path`` now (not when systemd passed this process its socket)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        return False
    return _listening_pid(path) is not None


def bind_atomically(path: str) -> Listener:
    """Bind a temporary name, listen, then rename it over ``path``.

    A daemon still listening there is displaced, not refused: from the rename
    on, every new call reaches this one, and the old one keeps only the calls
    it already has. That makes "start the new one, then stop the old one" a
    restart with no gap, and a restart whose old daemon is slow to let go of
    the path (still draining, or its supervisor killed) cannot fail.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(temporary)
        finally:
            os.umask(old_umask)
        sock.listen(BACKLOG)
        st = os.stat(temporary)
        with _directory_lock(directory):
            displaced = _listening_pid(path)
            os.rename(temporary, path)
        if displaced is not None:
            log.warning("took %s over from the daemon that was serving it (pid %d); stop that one", path, displaced)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return Listener(sock, path, (st.st_dev, st.st_ino))


def _listening_pid(path: str) -> int | None:
    """The pid that made the socket at ``path`` listen, if anything still listens there.

    A socket file left by a killed daemon refuses connections; so does a
    path with no socket. SO_PEERCRED of a connected client names the process
    that called listen().
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        pid, _uid, _gid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return None
    finally:
        probe.close()
    return int(pid)


@contextlib.contextmanager
def _directory_lock(directory: str) -> Iterator[None]:
    """Serialise path hand-overs between daemons (an flock on the socket's directory)."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
